"""The Inspection view (the QA inspector's desktop face), added to the main window as a view.

`install()` adds `attach` to MainWindow.extensions; `attach(window)` it registers the `inspection` view (View menu,
`lienzo --view inspection`) without importing pyqtgraph or the view's pages until first shown,
so the window still appears at once.
"""

from __future__ import annotations

from PySide6.QtGui import QKeySequence

from desktop import ui


def attach(window) -> None:
    state = {"view": None}

    def show() -> None:
        if window.project is None:
            return
        view = state["view"]
        if view is None or window.workspace.indexOf(view) < 0:
            if view is None:
                from desktop.inspection.view import InspectionView

                view = InspectionView(window.project, window.jobs, window.signals)
                state["view"] = view
            window.workspace.addTab(view, ui.icon("find"), "Inspection")
        window.workspace.setCurrentWidget(view)

    def forget(*_args) -> None:
        view = state["view"]
        if view is not None:
            try:
                view.shutdown()
            except RuntimeError:  # already deleted with its tab
                pass
        state["view"] = None

    window.project_closed.connect(forget)
    window.inspection_view = lambda: state["view"]
    window.show_inspection_view = show
    window.register_view("inspection", show)
    action = window._add(window.view_menu, "&Inspection", show, QKeySequence("Ctrl+3"), "find")
    window.inspection_view_action = action
    action.setEnabled(window.project is not None)
    window.project_opened.connect(lambda _p: action.setEnabled(True))
    window.project_closed.connect(lambda: action.setEnabled(False))


def install() -> None:
    from desktop.main_window import MainWindow

    if attach not in MainWindow.extensions:
        MainWindow.extensions.append(attach)
