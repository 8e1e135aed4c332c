"""The rehearsal world: a simulated AWS account on loopback that boto3 and the AWS CLI use unchanged.

world/ (the model and its live state; the bottom of the wing), kms/, query/ (EC2, ELBv2, IAM, STS),
xks/ (the XKS proxy), server.py (one endpoint routing to them). It imports nothing of the tool, and
the tool reaches it only through dryrun.py and `sim serve` / `sim proxy`: they meet at an endpoint URL.
"""
