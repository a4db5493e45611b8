"""The district centre: every school's events, alarms and reports in one place, on a NATS JetStream cluster.

Schools keep their Mosquitto and bridge it to the cluster's MQTT listeners (`campusgw district bridge`
writes the bridge section for a site). NATS stores each QoS 1 message a school sends in its replicated
`$MQTT_msgs` stream before it acknowledges it, as long as a consumer is interested; the district workers
(`campusgw district worker`) share one durable pull consumer on it, write each batch to PostgreSQL and
acknowledge only after the commit. Redeliveries and a bridge's resends after a failover are absorbed by
the events' primary key (the CloudEvents id).
"""
