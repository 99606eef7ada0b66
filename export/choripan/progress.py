"""An export's progress on a terminal: one line on stderr naming the step and the time so far, refreshed every
second and cleared at the end; nothing at all where stderr is not a terminal (a log file, a pipe, a test)."""

from __future__ import annotations

import os
import sys
import threading

from tqdm import tqdm


class Steps:
    """The named steps of one long job, shown as `exporting 5/9: compiling the batch-1 model (00:21)`.

    `show`: None shows them when stderr is a terminal (tqdm's own test), True always, False never. Used as a
    context manager; `step(name)` starts the next step. The time ticks while a step runs (one step, a
    compilation, can take half a minute with nothing else to show).
    """

    def __init__(self, total: int, title: str = "exporting", show: bool | None = None):
        self.total, self.title, self.current = total, title, 0
        self.bar = tqdm(
            desc=title,
            total=total,
            file=sys.stderr,
            disable=None if show is None else not show,
            leave=False,
            bar_format="{desc} ({elapsed})",
            **_size(),
        )
        self._closed = threading.Event()
        self._ticker = None
        if not self.bar.disable:
            self._ticker = threading.Thread(target=self._tick, name="choripan-progress", daemon=True)
            self._ticker.start()

    def step(self, name: str) -> None:
        if self.current:
            self.bar.update(1)
        self.current += 1
        self.bar.set_description_str(f"{self.title} {self.current}/{self.total}: {name}")

    def _tick(self) -> None:
        while not self._closed.wait(1):
            self.bar.refresh()

    def close(self) -> None:
        self._closed.set()
        if self._ticker is not None:
            self._ticker.join()
        self.bar.close()

    def __enter__(self) -> Steps:
        return self

    def __exit__(self, *exception) -> None:
        self.close()


def _size() -> dict:
    """stderr's size for tqdm, 80x24 where the terminal says 0x0 (a pseudo-terminal nobody sized), where tqdm
    would print nothing at all."""
    try:
        columns, lines = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError):  # not a terminal, or no file descriptor: nothing is shown anyway
        columns, lines = 0, 0
    return {"ncols": columns or 80, "nrows": lines or 24}
