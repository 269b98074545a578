"""Progress bars on stderr (rich), or nothing: the one progress helper of ridurre.

Example:
    >>> with Progress(enabled=False) as progress:
    ...     task = progress.add("counting", total=3)
    ...     progress.advance(task)
"""

from __future__ import annotations

__all__ = ["Progress"]


class Progress:
    """Rich progress bars on stderr; a no-op when ``enabled`` is False.

    Args:
        enabled: draw the bars.
        prefix: text shown before every bar's description (``"sensitivity"``).
    """

    def __init__(self, enabled: bool = True, prefix: str = ""):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as _Progress

        self.enabled = bool(enabled)
        self.console = Console(stderr=True)
        label = (prefix + " " if prefix else "") + "{task.description:<28}"
        self._bars = _Progress(
            SpinnerColumn(),
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=not self.enabled,
        )

    def __enter__(self) -> Progress:
        self._bars.start()
        return self

    def __exit__(self, *exc) -> None:
        self._bars.stop()

    def add(self, description: str, total: int | None = None) -> int:
        """A new bar; returns its id."""
        return self._bars.add_task(description, total=total)

    def advance(self, task: int, n: int = 1, description: str | None = None) -> None:
        """Advance a bar by ``n`` (and change its description)."""
        if description is None:
            self._bars.advance(task, n)
        else:
            self._bars.update(task, advance=n, description=description)

    def finish(self, task: int) -> None:
        """Fill a bar (a loop that stopped early at its limit is done)."""
        done = self._bars.tasks[[t.id for t in self._bars.tasks].index(task)].completed
        self._bars.update(task, total=max(done, 1), completed=max(done, 1))

    def epochs(self, description: str, epochs: int | None):
        """A Keras callback advancing a new bar of ``epochs`` epochs (its ``task`` attribute is the bar)."""
        import keras

        task = self.add(description, total=epochs)
        progress = self

        class _EpochBar(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                progress.advance(task)

        bar = _EpochBar()
        bar.task = task
        return bar
