"""The work the flows order, one package per domain: ingest, harvest, model, curate, export, report,
fanout (the one fan-out) and common (what every domain shares); see ARCHITECTURE.md."""
