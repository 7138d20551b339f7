"""The dead-letter workbench (contract §9): every message the service dead-letters is taken off
its dead-letter queue into Redis (:mod:`.intake`), kept within bounds (:mod:`.store`), and can be
listed, inspected, redriven and discarded (:mod:`.redrive`) over HTTP (:mod:`.http`) and from
the command line (:mod:`.commands`)."""
