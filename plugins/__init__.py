"""The built-in plugins of drirl, one module per component, grouped by kind."""
