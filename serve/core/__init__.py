"""The core every side of linreg stands on — the runtime, the server, batch prediction and the
trainer: one error model (:mod:`.errors`), the artifact contract (:mod:`.manifest`, the column
specs in :mod:`.columns`, the graph's names and checks in :mod:`.graph`), reading and writing
tables (:mod:`.tables`, :mod:`.formats`, :mod:`.numbers`, :mod:`.jsontext`), outputs that are
whole or absent (:mod:`.atomic`, :mod:`.ownership`), and what every console script shares
(:mod:`.commands`, :mod:`.progress`). It imports nothing else of linreg."""
