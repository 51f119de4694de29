"""Reports: static HTML with inline SVG charts (no plotting library), and the markdown of artifacts.

Modules: `charts` (page style, escaped values, tables and inline SVG charts; `write_report`),
`curation` (the curation report as HTML and as markdown), `training` (the training report: metrics
side by side and training curves, as HTML and as markdown) and `markdown` (escaped values, tables
and inline images, safe to render; no Prefect here, so the CLI and `expectations.runner` use it too).
"""
