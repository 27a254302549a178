"""Project browser (left dock): documents, images, data sets, models and runs of the open project."""

from desktop.browser.widget import IMAGE_SUFFIXES, TEXT_SUFFIXES, ProjectBrowser, import_files_job

__all__ = ["ProjectBrowser", "import_files_job", "IMAGE_SUFFIXES", "TEXT_SUFFIXES"]
