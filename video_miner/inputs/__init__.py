"""What the user gave, as ordered unique sources: listed inputs (files, folders, URLs, object-store
prefixes, streams) and folders watched for new files."""
