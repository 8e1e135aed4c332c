"""`xksmigrate report RUN_ID`: a run's change record, from its journal alone.

record.py turns the journal into the change record (a versioned dict, the JSON file); window.py picks each
store's window events on the run's clock; timeline.py draws them with matplotlib (SVG and PNG); html.py and
markdown.py render the record as a self-contained page and as Markdown; files.py writes them all.
Only the CLI imports this package (tests/test_layers.py); it reads the engine's summary and the journal.
"""
