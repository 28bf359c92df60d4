"""Request schemas of the HTTP APIs, shared by the host and the browser runtime."""
