"""Stand-in for comfy.utils.ProgressBar: records every update."""

bars = []


class ProgressBar:
    def __init__(self, total):
        self.total = total
        self.current = 0
        self.updates = []
        bars.append(self)

    def update_absolute(self, value, total=None, preview=None):
        if total is not None:
            self.total = total
        self.current = value
        self.updates.append(value)

    def update(self, value):
        self.update_absolute(self.current + value, self.total)
