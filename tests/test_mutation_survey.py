"""scripts/mutation_survey.py stays runnable: each planted bug still applies to the current sources,
and names test files that exist. (The survey itself is slow, tens of minutes: it is not run here.)"""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _survey():
    spec = importlib.util.spec_from_file_location("mutation_survey", ROOT / "scripts" / "mutation_survey.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclasses look their module up while being defined)
    spec.loader.exec_module(module)
    return module


def test_every_mutant_applies_once_and_names_existing_tests():
    survey = _survey()
    ids = [m.id for m in survey.MUTANTS]
    assert len(ids) == len(set(ids))
    for m in survey.MUTANTS:
        source = (ROOT / m.file).read_text()
        assert source.count(m.old) == 1, (
            f"{m.id}: its text occurs {source.count(m.old)} times in {m.file}; update or drop the mutant")
        assert m.new != m.old and m.what
        for test in m.tests:
            assert (ROOT / test).is_file(), (m.id, test)
