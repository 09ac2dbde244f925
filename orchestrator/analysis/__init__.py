"""The analysis of a sweep's records, with no Ray: the record store and its folders, statistics, comparisons, the dry run's power, the report and its figures, decide."""
