# The README's own install steps in a container: `docker run -p 8000:8000 mnemoscope`.
FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir -e .
EXPOSE 8000
# Inside a container the server must listen beyond loopback to be reachable through -p;
# --allow-remote says so explicitly (set MNEMOSCOPE_TOKEN to require a bearer token).
CMD ["mnemoscope", "demo", "--host", "0.0.0.0", "--port", "8000", "--no-browser", "--allow-remote"]
