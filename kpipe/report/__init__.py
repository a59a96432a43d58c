"""The result model (results.py) and what is written from it: result.json, junit.xml, the markdown and HTML reports
(writers.py, templates/), report.txt (mail.py), and the JSON Schema of result.json (schema/)."""
