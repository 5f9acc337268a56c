"""Fused Triton kernels, one module per op, each with a pure-PyTorch twin of the same signature
(the fallback and the test oracle). Importing this package never fails: without Triton,
``triton_support.unavailable_reason`` says why the kernels cannot run."""
