"""Credentials for nodes: a kubelet image credential provider and a docker credential helper,
both minting registry passwords through the ECR API's GetAuthorizationToken."""
