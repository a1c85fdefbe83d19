"""What the API and the outbound processes share about deliveries: the egress fence, the org's
signing secrets, each channel's targets and its queue's status."""
