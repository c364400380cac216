"""An example drop-in jobhost plugin; the hooks live in `jobhost_example.plugin`."""
