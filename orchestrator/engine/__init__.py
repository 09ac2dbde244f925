"""The sweep on Ray (Ray lives here): the Tune driver, the trial, callbacks, search and pruning, the Ray session, the cluster, the dashboard, the serving gate, storage, job submission, tracking."""
