"""The kmsbeam KMS emulator: an HTTP server speaking Alibaba Cloud KMS API 2016-01-20."""
