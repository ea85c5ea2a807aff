from builder.entry import run

run()
