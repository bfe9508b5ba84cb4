"""Files: attachments in and out, kept in a file store (a local directory or S3) once per
content hash per agent; rows in ``attachments`` say what each message carries."""
