"""The query (XML) protocol services of the world: EC2, ELBv2, IAM and STS."""
