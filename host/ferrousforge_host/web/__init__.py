"""The browser side of the host: the demo site, the runtime bundle, model files and facts for browsers."""
