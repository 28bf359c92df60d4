"""FerrousForge's native host: server, model store, scheduler, engines and CLI."""
