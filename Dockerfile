FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bridge ./bridge
COPY channels ./channels
RUN pip install --no-cache-dir . && useradd --system bridge
USER bridge
EXPOSE 8080
CMD ["bridge", "serve"]
