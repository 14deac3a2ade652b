-- wrk script: POST /api/v1/auth/token with the key in KEYGATE_BENCH_KEY (tokens issued per second).
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("KEYGATE_BENCH_KEY")
