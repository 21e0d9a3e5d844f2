# TensorFlow's beginner quickstart, in its Keras 3 spelling, unchanged.
# Run it on tinynn with:  python tools/as_keras.py examples/keras/quickstart.py
import keras

mnist = keras.datasets.mnist

(x_train, y_train), (x_test, y_test) = mnist.load_data()
x_train, x_test = x_train / 255.0, x_test / 255.0

model = keras.models.Sequential([
    keras.Input(shape=(28, 28)),
    keras.layers.Flatten(),
    keras.layers.Dense(128, activation="relu"),
    keras.layers.Dropout(0.2),
    keras.layers.Dense(10),
])

predictions = keras.ops.convert_to_numpy(model(x_train[:1]))
print(predictions)
print(keras.ops.convert_to_numpy(keras.activations.softmax(predictions)))

loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
print(keras.ops.convert_to_numpy(loss_fn(y_train[:1], predictions)))

model.compile(optimizer="adam", loss=loss_fn, metrics=["accuracy"])
model.fit(x_train, y_train, epochs=5)
model.evaluate(x_test, y_test, verbose=2)

probability_model = keras.Sequential([model, keras.layers.Softmax()])
print(probability_model(x_test[:5]))
