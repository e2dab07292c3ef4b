"""Pure routing decisions: config schema, bucketing, route table, guard arithmetic. No I/O."""
