"""The work behind the routes: storing checkpoints, tracing models, running analyses.
Routers validate, call one of these, and serialise; they never touch a model."""
