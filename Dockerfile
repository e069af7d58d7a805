# Trains the default agent (PPO on CartPole-v1). Build: docker build -t pgrl .   Run: docker run --rm pgrl
# Any script runs the same way: docker run --rm pgrl python algos/sac.py --env-id Hopper-v5
FROM python:3.11-slim

# libgl1 and libglib2.0-0 for opencv (the Atari resize), ffmpeg for --capture-video.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 ffmpeg \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# The dependencies first, in their own layer, so editing a script does not reinstall them.
# For a much smaller CPU-only image, add before it:
#   RUN pip install --no-cache-dir torch --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY benchmark ./benchmark
RUN pip install --no-cache-dir -e ".[envpool]"

COPY . .
CMD ["python", "algos/ppo.py", "--env-id", "CartPole-v1"]
