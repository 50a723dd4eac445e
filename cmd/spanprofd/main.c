/* spanprofd — placeholder entry point; replaced by the CLI of issue #2. */
int main(void) { return 0; }
