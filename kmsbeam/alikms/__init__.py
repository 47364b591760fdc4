"""The Alibaba Cloud KMS key source (alibaba-kms:// and kms-emulator://) over the official SDK."""
