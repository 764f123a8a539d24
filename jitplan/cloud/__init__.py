"""The cloud lifecycle: one state machine per rented instance (intent -> created -> ready -> training ->
pulled -> destroyed, with the outbid, exited, offline and kept branches), and the one place that decides
teardown. Sits above launch/ and providers/; nothing below imports it."""
