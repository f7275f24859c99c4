"""``kresume demo``: the end-to-end demo (control plane, object store, operator, node agent, a real Lightning
Job preempted again and again). See :mod:`kresume.devtools.demo.run`."""
