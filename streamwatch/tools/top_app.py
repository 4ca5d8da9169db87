"""The Textual screen of ``streamwatch top``: a table of open streams, a summary line, key bindings.

Keys: ``s`` next sort column, ``r`` reverse, ``t`` stalled only, ``/`` filter by route/api/model
(Enter applies, Escape clears), ``q`` quit. Polling runs in a worker thread so a slow admin
endpoint never freezes the keys.
"""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Input, Static

from streamwatch.tools.top import _COLUMNS, SORT_KEYS, Poller, View


class TopApp(App[None]):
    """Refreshes every ``interval`` seconds from a :class:`Poller` into a :class:`View`."""

    TITLE = "streamwatch top"
    CSS = "#filter { display: none; } #filter.shown { display: block; }"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "next_sort", "sort"),
        Binding("r", "reverse", "reverse"),
        Binding("t", "stalled_only", "stalled only"),
        Binding("slash", "filter", "filter"),
        Binding("q", "quit", "quit"),
    ]

    def __init__(self, poller: Poller, view: View, interval: float) -> None:
        super().__init__()
        self._poller = poller
        self._view = view
        self._interval = interval

    def compose(self) -> ComposeResult:
        yield Static(id="summary")
        yield Input(placeholder="filter route/api/model, Enter to apply", id="filter")
        yield DataTable(id="streams", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns(*_COLUMNS)
        table.focus()  # keys go to the table and the app's bindings, not the hidden filter box
        self.refresh_data()
        self.set_interval(self._interval, self.refresh_data)

    @work(thread=True, exclusive=True)
    def refresh_data(self) -> None:
        self._poller.poll(self._view)
        self.call_from_thread(self._redraw)

    def _redraw(self) -> None:
        view = self._view
        summary = view.summary() if view.error is None else view.error
        self.query_one("#summary", Static).update(summary)
        table = self.query_one(DataTable)
        table.clear()
        for row in view.visible():
            table.add_row(*row.cells())

    def action_next_sort(self) -> None:
        view = self._view
        view.sort = SORT_KEYS[(SORT_KEYS.index(view.sort) + 1) % len(SORT_KEYS)]
        self._redraw()

    def action_reverse(self) -> None:
        self._view.descending = not self._view.descending
        self._redraw()

    def action_stalled_only(self) -> None:
        self._view.stalled_only = not self._view.stalled_only
        self._redraw()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("shown")
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._view.text_filter = event.value.strip()
        event.input.remove_class("shown")
        self.query_one(DataTable).focus()
        self._redraw()

    def key_escape(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = ""
        box.remove_class("shown")
        self._view.text_filter = ""
        self.query_one(DataTable).focus()
        self._redraw()
