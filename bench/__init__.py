"""The pymmapdev benchmark (``python -m bench``; see bench/__main__.py for the layout)."""
