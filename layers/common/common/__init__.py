"""The common layer: configuration, Postgres access, observability and the shared
plumbing every function uses. Modules import nothing heavy and touch no network at
import time; connections and clients are made on first use."""
