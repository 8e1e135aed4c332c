"""The world file's model (model.py), the live state (state.py), its CA, derived and default worlds."""
