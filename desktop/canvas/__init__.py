"""Image canvas: a zoomable, pannable view of project images with a thumbnail strip.

Other features extend it without editing it: append a callable to `CanvasPanel.extensions`; it is
called with each new panel and may add actions to `panel.toolbar` (the top bar; zoom and export
live in `panel.view_bar` under the image), side panels with
`panel.add_side_panel(widget, title)` (generation controls, a gallery), and scene items above the
image with `panel.view.add_layer(item, z)` (a mask layer).
"""

from desktop.canvas.panel import CanvasPanel, export_image_file
from desktop.canvas.strip import ImageStrip
from desktop.canvas.view import ImageView, load_qimage, pixel_value_text

__all__ = ["CanvasPanel", "ImageStrip", "ImageView", "export_image_file", "load_qimage",
           "pixel_value_text"]
