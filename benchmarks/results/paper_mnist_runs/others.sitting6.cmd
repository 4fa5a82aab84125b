# sitting 6, first start (stopped by SIGTERM after ~3 min to rebuild the extension; no epoch finished)
cd /work/main && python benchmarks/paper_mnist.py --data-dir /work/data/binarized_mnist --runs-dir /work/main/runs/paper_mnist --threads 2 --train-only --busy-minutes 0 --models pixelcnn --budget 1500
# sitting 6, continued
cd /work/main && python benchmarks/paper_mnist.py --data-dir /work/data/binarized_mnist --runs-dir /work/main/runs/paper_mnist --threads 2 --train-only --busy-minutes 0 --models pixelcnn --budget 1200
