"""``jitplan report RUN``: one self-contained HTML page (and JSON) of a run: plan beside measured with drift,
loss, throughput and memory over time, events, samples. build.py gathers the data, html.py renders it."""
