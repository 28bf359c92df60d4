"""Native engines, one module each; importing a module registers its Molds. The server imports them all
(``app.py``); a runner process imports only the engine it hosts."""
