"""The embedded local stack: broker, Redis, scoring and feedback processes, the standalone
Flink cluster, Java discovery and the demo. Sits on top: nothing but the CLI imports it."""
