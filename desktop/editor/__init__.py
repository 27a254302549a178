"""Text editor panel: documents with autosave, undo/redo, find/replace, counts, history, preview.

Other features extend it without editing it: append a callable to `EditorPanel.extensions`; it is
called with every new panel and may add actions to `panel.toolbar` or `panel.actions_menu`, read
`panel.text_edit` and `panel.document_id`, and listen to `panel.document_saved`.
"""

from desktop.editor.find_bar import FindBar
from desktop.editor.history import VersionHistoryDialog
from desktop.editor.panel import EditorPanel, count_words

__all__ = ["EditorPanel", "FindBar", "VersionHistoryDialog", "count_words"]
