"""Audio without Qt or torch: I/O, analysis, mastering.

Layering rule: ``app.engine`` imports nothing else of ours.  Every array that
crosses a function boundary in this package is ``(channels, frames) float32``
(or float64 where precision matters, and then the name says so).
"""
