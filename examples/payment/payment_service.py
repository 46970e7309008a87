"""A stand-in for the payment service the example charges through: it
answers POST /charge with a charge id, declines amounts above 1000 (402)
and remembers idempotency keys, so a repeated request is not charged twice.
Run: python3 examples/payment/payment_service.py [PORT] (default 8080)."""
import http.server
import json
import sys
import uuid

charges = {}


class PaymentService(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        key = self.headers.get("idempotency-key", "")
        if body.get("amount", 0) > 1000:
            self.answer(402, {"error": "declined: amount above 1000"})
            return
        if key not in charges:
            charges[key] = "ch_" + uuid.uuid4().hex[:12]
            print(f"charged {body.get('amount')} {body.get('currency')} for {key}: {charges[key]}", flush=True)
        self.answer(200, {"charge_id": charges[key]})

    def answer(self, status, doc):
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
http.server.ThreadingHTTPServer(("127.0.0.1", port), PaymentService).serve_forever()
