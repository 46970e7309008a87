"""The Python wrapper's README examples with their handler bodies unchanged:
Pydantic models validate the input, a ValidationError terms the message, a
payment-service error re-raised is retried. service.toml replaces the
wrapper's decorators; `natsapp.publisher` stands in for `app.publisher`.

Build inside a project made by `natsapp-wasm new NAME --lang python`, with
requirements.txt beside this file (Pydantic 1.10, pure Python).
"""

import logging

import natsapp
from pydantic import BaseModel, ValidationError

logger = logging.getLogger("wrapper-examples")


# Basic Example
class UserMessage(BaseModel):
    user_id: int
    content: str
    timestamp: str


class ProcessedMessage(BaseModel):
    user_id: int
    processed_content: str
    status: str


output_publisher = natsapp.publisher(subject="processed.messages")


async def process_user_message(data, msg):
    # Validate incoming data
    user_msg = UserMessage(**data)

    # Process the message
    processed_content = f"Processed: {user_msg.content}"

    # Create and publish result
    result = ProcessedMessage(
        user_id=user_msg.user_id,
        processed_content=processed_content,
        status="completed"
    )

    await output_publisher.publish(result)


# Error Handling and Retry Logic
class PaymentRequest(BaseModel):
    payment_id: str
    amount: float


class PaymentSuccess(BaseModel):
    payment_id: str
    charge_id: str


class PaymentServiceError(Exception):
    pass


class ExternalPaymentService:
    """The example's payment service: down for amounts over 1000."""

    async def charge(self, payment):
        if payment.amount > 1000:
            raise PaymentServiceError("the payment service is unavailable")
        return {"payment_id": payment.payment_id, "charge_id": f"ch_{payment.payment_id}"}


external_payment_service = ExternalPaymentService()
success_publisher = natsapp.publisher(subject="payment.success")


async def process_payment(data, msg):
    try:
        payment = PaymentRequest(**data)

        # This might fail and trigger retry
        result = await external_payment_service.charge(payment)

        # Publish success event
        await success_publisher.publish(PaymentSuccess(**result))

    except ValidationError as e:
        # Invalid data - don't retry
        logger.error(f"Invalid payment data: {e}")
        await msg.term()  # Terminate message (no retry)

    except PaymentServiceError as e:
        # Temporary error - will retry automatically
        logger.warning(f"Payment service error: {e}")
        raise  # Let wrapper handle retry logic

    except Exception as e:
        # Unknown error - retry
        logger.error(f"Unexpected error: {e}")
        raise


async def handle(data, msg):
    if msg.subject == "payment.process":
        await process_payment(data, msg)
    else:
        await process_user_message(data, msg)
