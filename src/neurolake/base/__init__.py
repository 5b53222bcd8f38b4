"""The bottom layer every package uses: settings, time parsing, names and not-found errors, results.

Nothing here imports another neurolake package except :mod:`neurolake.errors`.
"""
