"""One module per pipeline step: ingest, scheduler, send (both pools, with attachments), backup."""
