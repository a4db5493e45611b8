"""The rules service: the shell around the pure rules in gateway.rules. It takes events off MQTT, keeps them in
the records (gateway.records) in one transaction each with what the rules decide, answers the drivers, and runs
the periodic jobs (escalation, patrol rounds, the visitor sweep)."""
