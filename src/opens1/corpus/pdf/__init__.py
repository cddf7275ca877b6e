"""PDFs to Markdown with page-level routing (`opens1 data parse-pdf`), one module per step:
fragments (the page model), tables, layout (reading order), margins (running lines),
formulas, markdown (rendering), route (which pages need a heavy parser), ocr (the heavy
parsers), parse (one document), markers (done markers), workers (supervised processes),
dedup (near-duplicate pages) and run (a whole batch)."""
