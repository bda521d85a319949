"""Stage 9, the Markdown reports: reports/<profile>/index.md and one page per paper (pages.py) built from their
sections (tables.py, sections.py) and figures (figures.py), and reports/audit.md (audit.py)."""
