def main() -> None:
    print("fleet")
